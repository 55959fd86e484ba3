"""The built-in packs' data: one folder each (`pack.toml` + store export archives), listed by
`skills.packs.builtin_packs()` and shipped as package data. No code lives here; the file only makes the folder a
package that setuptools finds, so that it does not warn about an importable folder left out of `packages`."""

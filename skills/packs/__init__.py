"""Built-in skill packs live in folders here (added by the skill-pack issue)."""

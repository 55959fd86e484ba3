"""`habitloop serve`: the OpenAI-compatible HTTP server over any `ChatModel` (`agent.serve.app`)."""

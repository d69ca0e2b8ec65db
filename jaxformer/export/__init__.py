"""Export to, and import from, HuggingFace `CodeGenForCausalLM` directories."""

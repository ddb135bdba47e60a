"""Configuration: the frozen model, Azure's SSL policy vocabulary, and the loader that turns an INI file into the model."""

"""Importers of official checkpoints (PyTorch is optional and only imported to read `.pth`)."""

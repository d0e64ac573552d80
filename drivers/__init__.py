"""Kernel modules (pluggy plugins), one package per kernel driver. Import kernel only."""

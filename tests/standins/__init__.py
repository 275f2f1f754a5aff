"""Loopback stand-ins of the model APIs the real agent CLIs talk to, scripted turn by turn per test."""

"""Agents, exploration methods and the small shared pieces (networks, distributions, math) they use."""

"""Exploration methods: intrinsic rewards, action noise, learned exploration."""

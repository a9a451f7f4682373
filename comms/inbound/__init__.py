"""Inbound mail: turning raw replies, auto-replies and bounces into structured data."""

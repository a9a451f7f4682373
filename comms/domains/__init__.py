"""Domain-as-code: tenant sending domains, their DNS records and their drift."""

"""State shared by replicas and workers: session claims and the change feed (extauthz.shared.redis)."""

"""Libraries: folders mediascan keeps current by itself (settings and names, the RPCs, the
change feed's followers, and the keepers that watch, poll and schedule them)."""

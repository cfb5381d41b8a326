"""The feeds app has no tables: its activity, timelines and notifications are Redis
streams (feeds.keys), and a follow is a row of accounts' Follow model."""

# Activity streams, timelines and notifications live in Redis streams; database
# models for this app arrive with the feed and notification features.

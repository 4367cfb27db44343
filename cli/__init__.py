"""``det``: Flotilla's command-line client, with Determined's nouns, verbs and flags."""

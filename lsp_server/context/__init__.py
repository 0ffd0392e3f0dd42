"""Context gathering: prefix/suffix around the cursor and repository snippets, in model tokens."""

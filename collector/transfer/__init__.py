"""Getting one archive: the streamed, resumable download and the whole-gzip check. Imports
destinations/ (the protocols it writes through), clouddc/ and below."""

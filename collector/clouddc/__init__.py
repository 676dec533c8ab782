"""The CloudDC API: the client of its calls, the parsing of its replies, discovery through
ListServers. Imports config/, auth/, net/, control/ and the leaves; never destinations/."""

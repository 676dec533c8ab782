"""The CloudDC API: the client of its calls, the parsing of its replies, discovery through
ListServers. Imports auth/, net/, control/, config/ and the leaves."""

"""The Textual app and the command line. The only package that imports textual."""

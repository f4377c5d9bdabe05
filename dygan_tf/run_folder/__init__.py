"""The run folder on disk: its file names, reading and writing them, and the lock that
keeps one writer per folder.
"""

"""What every room uses: atomic writes, user errors, command-line helpers, progress,
markdown tables.
"""

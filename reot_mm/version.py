"""Version and licence of reot_mm (read by setup.py without importing the package)."""
__version__ = '0.1.0'
__license__ = 'Apache-2.0'
__copyright__ = 'Copyright 2026 reot_mm contributors'

version_info = tuple(int(part) for part in __version__.split('.'))

"""Frames in, masks and overlays out.

- :mod:`.frames`: frame folders, video files and live sources, with their size checks.
- :mod:`.mask_io`: label-map PNGs read and written (atomically).
- :mod:`.overlay`: overlay videos that browsers play.
- :mod:`.overlap`: decoding ahead and writing behind, through bounded queues.
"""

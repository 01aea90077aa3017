"""Frames in, masks and overlays out.

- :mod:`.frames`: frame folders, video files and live sources, with their size checks.
- :mod:`.mask_io`: label-map PNGs read and written (atomically).
- :mod:`.overlay`: overlay videos that browsers play.
- :mod:`.overlap`: decoding ahead and writing behind, through bounded queues.
- :mod:`.pipeline`: the pipelined frame loop of stmae-segment, stmae-eval and corpus runs
  (decode ahead, submit before wait, a writer pool, masks synced as a group commit).
"""

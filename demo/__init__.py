"""`stmae-demo`: trained weights -> ONNX export -> runtime -> masks, overlay, contact sheet,
report, in one command on a CPU."""

# The synthetic clip's default seed: of seeds 0-9, the shipped model's J&F on seed 7 is the
# lower of the two middle values (their median is 0.917; docs/demo.md lists all ten), so the
# default clip is a typical one, not the best. Here, not in demo.pipeline, so that the
# command line reads it without loading torch (--help stays instant).
DEFAULT_SEED = 7

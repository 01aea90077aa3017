"""`stmae-demo`: trained weights -> ONNX export -> runtime -> masks, overlay, contact sheet,
report, in one command on a CPU."""

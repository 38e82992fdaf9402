"""Layer 2: from raw inputs to vectors: encoders for images, texts and tables, and
the proxy networks trained on them."""

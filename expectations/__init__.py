"""Great Expectations data-quality suites and the code that runs them."""

"""Code evals: HumanEval pass@k, single-line infill, and the sandbox that runs generated code."""

"""Jobs the operator runs for an instance: builders and the shell scripts they execute.

Each Job has a deterministic name (so an operator restart finds the Job it created instead of
creating another), an owner, a backoff limit and a deadline, a "restricted" security context, and
takes credentials from the instance's Secret through the environment, never the command line.
"""

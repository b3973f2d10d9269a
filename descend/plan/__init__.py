"""Between a chain and its kernels: the formula language, hyperparameters, declared state, the tracer,
the schedule of passes and the plan every path reads."""

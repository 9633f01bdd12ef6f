"""Layer 3: the train step, the loop, evaluation, metrics, FLOPs and preemption."""

"""dqserve training: DQNet (instance-aware dynamic quantization) on CIFAR-10, evaluation and bundle export."""

"""runtime.train.huggingface: Hugging Face integrations (Ray's ``ray.train.huggingface``)."""

"""Ray adapters of the apa core: the batch scoring job (Ray Data) and fine-tuning (Ray Train)."""

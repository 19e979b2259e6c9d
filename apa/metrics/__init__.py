"""Agreement between predicted and human scores: correlations with bootstrap CIs at every
level and aspect, computed on predictions joined to human scores unit by unit."""

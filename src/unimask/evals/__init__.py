"""unimask.evals"""

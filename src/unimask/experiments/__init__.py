"""unimask.experiments"""

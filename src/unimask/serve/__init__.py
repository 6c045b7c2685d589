"""unimask.serve"""

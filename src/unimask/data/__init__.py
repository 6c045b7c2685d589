"""unimask.data"""

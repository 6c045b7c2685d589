"""unimask.model"""

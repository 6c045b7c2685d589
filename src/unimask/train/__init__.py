"""unimask.train"""

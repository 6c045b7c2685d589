"""unimask.envs"""

"""unimask.agent"""

"""harness_ext"""

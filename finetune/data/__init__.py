"""finetune/data"""

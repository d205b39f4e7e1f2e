import sys
AtariMultiTaskEnv = None

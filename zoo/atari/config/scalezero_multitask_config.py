"""placeholder"""
print("config ok")

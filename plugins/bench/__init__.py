"""``facelab bench``: a recipe's training and inference speed, side by side with a plain Keras
loop on the same model and data."""

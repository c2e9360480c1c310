import matplotlib

matplotlib.use("Agg")  # tests draw charts without a screen

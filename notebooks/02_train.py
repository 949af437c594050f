# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · Train a model with TorchDistributor
# MAGIC
# MAGIC Trains S-CNN-RGB, S-CNN-All or the Inception baseline on the dataset of `01_build_dataset`
# MAGIC with `num_processes` DDP processes through `pyspark.ml.torch.distributor.TorchDistributor`
# MAGIC (one per GPU with `use_gpu = true`). With `mlflow = true` the run goes to this workspace's
# MAGIC MLflow: the config as params, each epoch's metrics, the best checkpoint as a model.

# COMMAND ----------

from bigearthnet import notebooks as nb

nb.declare(dbutils.widgets, "02_train")

# COMMAND ----------

result = nb.train(dbutils.widgets)
display(nb.history_table(result))

# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Build the BigEarthNet dataset
# MAGIC
# MAGIC Cuts Sentinel-2 L2A products into 1200 m patches, labels them with CORINE Land Cover 2018
# MAGIC and writes the Parquet dataset (and, with `delta = true`, the same files as Delta tables),
# MAGIC as `bigearthnet build` does, on this cluster's Spark session.
# MAGIC
# MAGIC Needs the `bigearthnet` wheel on the cluster and, for the `sedona-spark` engine, the Sedona
# MAGIC init script (`scripts/databricks_init_sedona.sh`); see the README, "Databricks".

# COMMAND ----------

from bigearthnet import notebooks as nb

nb.declare(dbutils.widgets, "01_build_dataset")

# COMMAND ----------

manifest = nb.build_dataset(dbutils.widgets)
display(nb.counts_table(manifest))

# COMMAND ----------

# MAGIC %md Patches per split, with Spark SQL over the dataset's Delta table.

# COMMAND ----------

display(nb.split_counts(dbutils.widgets))

"""The build as explicit stages: plan -> labels -> pixels -> screen -> split -> write.

Each stage is a module of pure logic over plain data (Arrow tables, numpy arrays, shapely
geometries and a small config); none knows which executor runs it. The Spark task
(:mod:`bigearthnet.stages.product`, run by :mod:`bigearthnet.spark.build`) composes them per
product; ``import-v1`` (:mod:`bigearthnet.stages.v1_archive`) replaces *pixels* with its folder
reader and takes its labels from the archive's JSON. See ARCHITECTURE.md.
"""

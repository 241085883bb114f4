"""distillery: verified synthetic data and distillation in one loop.

The Python API mirrors the recipe::

    from distillery import Pipeline, Recipe
    recipe = Recipe.from_yaml("recipes/gsm8k.yaml")   # or Recipe(seeds=..., teacher=..., ...)
    report = Pipeline(recipe).run()
"""

__version__ = "0.1.0"

__all__ = ["Pipeline", "Recipe", "__version__"]


def __getattr__(name: str):  # lazy: importing distillery stays cheap
    if name == "Pipeline":
        from distillery.pipeline.runner import Pipeline

        return Pipeline
    if name == "Recipe":
        from distillery.recipe import Recipe

        return Recipe
    raise AttributeError(name)

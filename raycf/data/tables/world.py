"""A small consistent toy world: what each shop sells and who works there; what animals can and cannot do.

The reading and yes/no generators draw their passages from it, and the pretraining corpus states it, so
a passage's answer is supported both by the passage and by what raycf-tiny learned about the world.
"""

# (place, what people buy there, who sells it)
SHOPS = [
    ("bakery", "bread", "the baker"), ("library", "a book", "the librarian"),
    ("flower shop", "roses", "the florist"), ("market", "apples", "the fruit seller"),
    ("pharmacy", "medicine", "the pharmacist"), ("post office", "stamps", "the postmaster"),
    ("butcher's", "sausages", "the butcher"), ("toy shop", "a kite", "the toymaker"),
    ("cafe", "coffee", "the waiter"), ("pet shop", "a hamster", "the pet seller"),
    ("garden centre", "seeds", "the gardener"), ("fish shop", "fresh fish", "the fishmonger"),
    ("cheese shop", "cheese", "the cheesemaker"), ("sweet shop", "chocolate", "the confectioner"),
    ("hardware store", "nails", "the hardware seller"), ("ice cream van", "ice cream", "the ice cream man"),
    ("stationery shop", "pencils", "the stationer"), ("music shop", "a guitar", "the luthier"),
    ("bike shop", "a bike tyre", "the mechanic"), ("clothes shop", "a scarf", "the tailor"),
    ("farm shop", "eggs", "the farmer"), ("shoe shop", "boots", "the shoemaker"),
]

# (animals, what they can do, what they cannot do): only clear-cut, common-knowledge cases
ABILITIES = [
    ("eagles", ["fly", "lay eggs"], ["breathe under water", "bark"]),
    ("penguins", ["swim", "lay eggs"], ["fly", "climb trees"]),
    ("ducks", ["fly", "swim", "lay eggs"], ["bark", "breathe under water"]),
    ("dogs", ["bark", "swim"], ["fly", "lay eggs"]),
    ("cats", ["climb trees"], ["fly", "bark", "lay eggs"]),
    ("fish", ["swim", "breathe under water"], ["fly", "climb trees"]),
    ("frogs", ["hop", "swim", "lay eggs"], ["fly", "bark"]),
    ("kangaroos", ["hop"], ["fly", "lay eggs", "breathe under water"]),
    ("monkeys", ["climb trees"], ["fly", "lay eggs", "breathe under water"]),
    ("squirrels", ["climb trees"], ["fly", "bark", "lay eggs"]),
    ("horses", ["swim"], ["fly", "climb trees", "lay eggs"]),
    ("turtles", ["swim", "lay eggs"], ["fly", "climb trees"]),
    ("bats", ["fly"], ["lay eggs", "breathe under water"]),
    ("ostriches", ["lay eggs"], ["fly", "climb trees"]),
    ("whales", ["swim"], ["fly", "breathe under water", "lay eggs"]),
    ("bees", ["fly"], ["bark", "breathe under water"]),
    ("rabbits", ["hop", "dig holes"], ["fly", "lay eggs"]),
    ("moles", ["dig holes"], ["fly", "climb trees"]),
    ("parrots", ["fly", "lay eggs"], ["breathe under water", "bark"]),
    ("owls", ["fly", "lay eggs"], ["breathe under water", "bark"]),
    ("chickens", ["lay eggs"], ["breathe under water", "bark"]),
    ("dolphins", ["swim"], ["fly", "breathe under water", "lay eggs"]),
    ("lizards", ["lay eggs"], ["fly", "bark"]),
    ("crocodiles", ["swim", "lay eggs"], ["fly", "climb trees"]),
    ("swans", ["fly", "swim", "lay eggs"], ["bark", "breathe under water"]),
    ("bears", ["swim", "climb trees"], ["fly", "lay eggs"]),
    ("foxes", ["dig holes"], ["fly", "lay eggs"]),
    ("octopuses", ["swim", "breathe under water"], ["fly", "bark"]),
    ("seals", ["swim"], ["fly", "breathe under water", "climb trees"]),
    ("tigers", ["swim"], ["fly", "lay eggs"]),
    ("elephants", ["swim"], ["fly", "climb trees", "hop"]),
    ("butterflies", ["fly"], ["bark", "breathe under water"]),
]

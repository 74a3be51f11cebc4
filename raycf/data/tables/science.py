"""Science facts: chemical symbols, units of measurement, young animals (common knowledge)."""

# (element, symbol)
ELEMENTS = [
    ("hydrogen", "H"), ("helium", "He"), ("lithium", "Li"), ("beryllium", "Be"), ("boron", "B"),
    ("carbon", "C"), ("nitrogen", "N"), ("oxygen", "O"), ("fluorine", "F"), ("neon", "Ne"),
    ("sodium", "Na"), ("magnesium", "Mg"), ("aluminium", "Al"), ("silicon", "Si"), ("phosphorus", "P"),
    ("sulfur", "S"), ("chlorine", "Cl"), ("argon", "Ar"), ("potassium", "K"), ("calcium", "Ca"),
    ("titanium", "Ti"), ("chromium", "Cr"), ("manganese", "Mn"), ("iron", "Fe"), ("cobalt", "Co"),
    ("nickel", "Ni"), ("copper", "Cu"), ("zinc", "Zn"), ("arsenic", "As"), ("bromine", "Br"),
    ("krypton", "Kr"), ("silver", "Ag"), ("tin", "Sn"), ("iodine", "I"), ("xenon", "Xe"),
    ("platinum", "Pt"), ("gold", "Au"), ("mercury", "Hg"), ("lead", "Pb"), ("uranium", "U"),
    ("radon", "Rn"), ("tungsten", "W"), ("cadmium", "Cd"), ("selenium", "Se"), ("strontium", "Sr"),
    ("barium", "Ba"), ("bismuth", "Bi"), ("plutonium", "Pu"), ("radium", "Ra"), ("gallium", "Ga"),
]

# (quantity, SI unit)
UNITS = [
    ("length", "metre"), ("mass", "kilogram"), ("time", "second"), ("electric current", "ampere"),
    ("temperature", "kelvin"), ("force", "newton"), ("energy", "joule"), ("power", "watt"),
    ("pressure", "pascal"), ("frequency", "hertz"), ("electric charge", "coulomb"), ("voltage", "volt"),
    ("electric resistance", "ohm"), ("amount of substance", "mole"), ("luminous intensity", "candela"),
]

# (animal, its young)
ANIMAL_YOUNG = [
    ("cat", "kitten"), ("dog", "puppy"), ("cow", "calf"), ("horse", "foal"), ("sheep", "lamb"),
    ("goat", "kid"), ("pig", "piglet"), ("duck", "duckling"), ("goose", "gosling"), ("hen", "chick"),
    ("frog", "tadpole"), ("bear", "cub"), ("lion", "cub"), ("kangaroo", "joey"), ("swan", "cygnet"),
    ("owl", "owlet"), ("eagle", "eaglet"), ("deer", "fawn"), ("rabbit", "kit"), ("fox", "kit"),
    ("seal", "pup"), ("whale", "calf"), ("elephant", "calf"), ("butterfly", "caterpillar"),
    ("fish", "fry"), ("wolf", "pup"), ("tiger", "cub"), ("donkey", "foal"), ("turkey", "poult"),
    ("pigeon", "squab"), ("hare", "leveret"), ("mosquito", "larva"), ("oyster", "spat"),
    ("zebra", "foal"), ("giraffe", "calf"),
]
